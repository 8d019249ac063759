//! A fake Envoy for the native shell's tests: it defines the dynamic-module callbacks the shell
//! imports (the same symbols Envoy 1.40.0 exports) over plain Rust header lists, and drives the
//! shell through the very hooks Envoy calls. Each test binary that includes this module links
//! the shell against it instead of Envoy.

#![allow(unsafe_code, dead_code, clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::c_void;

use sticky_filter_native::abi::{EnvoyBuffer, ModuleBuffer, ModuleHttpHeader};
use sticky_filter_native::{
    envoy_dynamic_module_on_http_filter_config_destroy, envoy_dynamic_module_on_http_filter_config_new,
    envoy_dynamic_module_on_http_filter_destroy, envoy_dynamic_module_on_http_filter_new,
    envoy_dynamic_module_on_http_filter_request_headers, envoy_dynamic_module_on_http_filter_response_headers,
    envoy_dynamic_module_on_http_filter_stream_complete, envoy_dynamic_module_on_program_init,
};

type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// One stream's header maps, as the filter's `filter_envoy` pointer.
#[derive(Default)]
struct FakeStream {
    request: Headers,
    response: Headers,
}

/// One configuration's counters, as the filter's `config_envoy` pointer.
#[derive(Default)]
struct FakeConfig {
    counters: RefCell<Vec<(String, u64)>>,
}

thread_local! {
    /// The configuration whose counters the stream callbacks increment (one per test thread).
    static CURRENT: RefCell<*const FakeConfig> = const { RefCell::new(std::ptr::null()) };
}

unsafe fn bytes<'a>(ptr: *const u8, length: usize) -> &'a [u8] {
    if ptr.is_null() || length == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(ptr, length) }
    }
}

unsafe fn stream<'a>(filter_envoy: *mut c_void) -> &'a mut FakeStream {
    unsafe { &mut *filter_envoy.cast::<FakeStream>() }
}

fn map(stream: &mut FakeStream, header_type: u32) -> &mut Headers {
    match header_type {
        0 => &mut stream.request,
        2 => &mut stream.response,
        other => panic!("the shell asked for header map {other}"),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_log(_level: u32, _message: ModuleBuffer) {}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_header(
    filter_envoy: *mut c_void,
    header_type: u32,
    key: ModuleBuffer,
    result: *mut EnvoyBuffer,
    index: usize,
    optional_size: *mut usize,
) -> bool {
    let stream = unsafe { stream(filter_envoy) };
    let key = unsafe { bytes(key.ptr, key.length) };
    let values: Vec<&(Vec<u8>, Vec<u8>)> = map(stream, header_type)
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .collect();
    if !optional_size.is_null() {
        unsafe { *optional_size = values.len() };
    }
    let found = values.get(index).map(|(_, v)| EnvoyBuffer {
        ptr: v.as_ptr(),
        length: v.len(),
    });
    unsafe {
        *result = found.unwrap_or(EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        })
    };
    true
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_set_header(
    filter_envoy: *mut c_void,
    header_type: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let stream = unsafe { stream(filter_envoy) };
    let key = unsafe { bytes(key.ptr, key.length) }.to_ascii_lowercase();
    let headers = map(stream, header_type);
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
    if !value.ptr.is_null() {
        headers.push((key, unsafe { bytes(value.ptr, value.length) }.to_vec()));
    }
    true
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_add_header(
    filter_envoy: *mut c_void,
    header_type: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let stream = unsafe { stream(filter_envoy) };
    let key = unsafe { bytes(key.ptr, key.length) }.to_ascii_lowercase();
    let value = unsafe { bytes(value.ptr, value.length) }.to_vec();
    map(stream, header_type).push((key, value));
    true
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_get_upstream_remote_address(
    _filter_envoy: *mut c_void,
    _address: *mut EnvoyBuffer,
    _port: *mut u32,
) -> bool {
    false
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    config_envoy: *mut c_void,
    name: ModuleBuffer,
    _label_names: *mut ModuleBuffer,
    _label_names_length: usize,
    counter_id: *mut usize,
) -> u32 {
    let config = unsafe { &*config_envoy.cast::<FakeConfig>() };
    let name = String::from_utf8_lossy(unsafe { bytes(name.ptr, name.length) }).into_owned();
    let mut counters = config.counters.borrow_mut();
    unsafe { *counter_id = counters.len() };
    counters.push((name, 0));
    0
}

fn increment(config: *const FakeConfig, id: usize, value: u64) -> u32 {
    let Some(config) = (unsafe { config.as_ref() }) else {
        return 1;
    };
    match config.counters.borrow_mut().get_mut(id) {
        Some((_, count)) => {
            *count += value;
            0
        }
        None => 1,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_increment_counter(
    _filter_envoy: *mut c_void,
    id: usize,
    _label_values: *mut ModuleBuffer,
    _label_values_length: usize,
    value: u64,
) -> u32 {
    increment(CURRENT.with(|c| *c.borrow()), id, value)
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
    config_envoy: *mut c_void,
    id: usize,
    _label_values: *mut ModuleBuffer,
    _label_values_length: usize,
    value: u64,
) -> u32 {
    increment(config_envoy.cast_const().cast(), id, value)
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
    _config_envoy: *mut c_void,
) -> *mut c_void {
    std::ptr::null_mut()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
    _scheduler: *mut c_void,
    _event_id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(_scheduler: *mut c_void) {}

/// Stream schedulers: the fake never answers an upgrade, so no stream is watched.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_new(_filter_envoy: *mut c_void) -> *mut c_void {
    std::ptr::null_mut()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_commit(_scheduler: *mut c_void, _event_id: u64) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_delete(_scheduler: *mut c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_reset_stream(
    _filter_envoy: *mut c_void,
    _reason: u32,
    _details: ModuleBuffer,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_http_callout(
    _config_envoy: *mut c_void,
    _callout_id: *mut u64,
    _cluster_name: ModuleBuffer,
    _headers: *mut ModuleHttpHeader,
    _headers_size: usize,
    _body: ModuleBuffer,
    _timeout_milliseconds: u64,
) -> u32 {
    2 // ClusterNotFound: the fake follows no control service.
}

/// What one exchange left in the header maps.
#[derive(Debug, Default)]
pub struct Exchanged {
    pub request: Headers,
    pub response: Headers,
}

impl Exchanged {
    pub fn request_values(&self, name: &str) -> Vec<&[u8]> {
        values(&self.request, name)
    }

    pub fn response_values(&self, name: &str) -> Vec<&[u8]> {
        values(&self.response, name)
    }
}

fn values<'a>(headers: &'a Headers, name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_slice())
        .collect()
}

/// The shell loaded with one filter configuration, as Envoy would hold it.
pub struct FakeEnvoy {
    config_envoy: Box<FakeConfig>,
    config: *const c_void,
}

impl FakeEnvoy {
    /// Loads the shell with the plugin configuration `json`; `None` if the shell refused it.
    pub fn load(json: &str) -> Option<FakeEnvoy> {
        assert!(!envoy_dynamic_module_on_program_init().is_null());
        let config_envoy = Box::new(FakeConfig::default());
        // SAFETY: pointers to live values, as Envoy passes them.
        let config = unsafe {
            envoy_dynamic_module_on_http_filter_config_new(
                std::ptr::from_ref(&*config_envoy).cast_mut().cast(),
                EnvoyBuffer {
                    ptr: b"sticky".as_ptr(),
                    length: 6,
                },
                EnvoyBuffer {
                    ptr: json.as_ptr(),
                    length: json.len(),
                },
            )
        };
        (!config.is_null()).then_some(FakeEnvoy { config_envoy, config })
    }

    /// One exchange: `request` headers in; the target answers with `response` headers (the
    /// route's `x-sticky-upstream` among them, if wanted).
    pub fn exchange(&self, request: &[(&str, &[u8])], response: &[(&str, &[u8])]) -> Exchanged {
        CURRENT.with(|c| *c.borrow_mut() = std::ptr::from_ref(&*self.config_envoy));
        let own = |headers: &[(&str, &[u8])]| -> Headers {
            headers
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect()
        };
        let mut stream = Box::new(FakeStream {
            request: own(request),
            response: Vec::new(),
        });
        let stream_ptr: *mut c_void = std::ptr::from_mut(&mut *stream).cast();
        // SAFETY: the hooks in Envoy's order, with the pointers the shell returned and a live
        // stream (written through its pointer only between hooks, as Envoy would).
        unsafe {
            let filter = envoy_dynamic_module_on_http_filter_new(self.config, stream_ptr);
            assert!(!filter.is_null(), "the shell made no stream filter");
            assert_eq!(
                envoy_dynamic_module_on_http_filter_request_headers(stream_ptr, filter, true),
                0
            );
            (*stream_ptr.cast::<FakeStream>()).response = own(response);
            assert_eq!(
                envoy_dynamic_module_on_http_filter_response_headers(stream_ptr, filter, true),
                0
            );
            envoy_dynamic_module_on_http_filter_stream_complete(stream_ptr, filter);
            envoy_dynamic_module_on_http_filter_destroy(filter);
        }
        Exchanged {
            request: std::mem::take(&mut stream.request),
            response: std::mem::take(&mut stream.response),
        }
    }

    /// The counter `name` (e.g. `sticky.pinned`).
    pub fn counter(&self, name: &str) -> u64 {
        self.config_envoy
            .counters
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }
}

impl Drop for FakeEnvoy {
    fn drop(&mut self) {
        // SAFETY: the configuration the shell returned, destroyed once.
        unsafe { envoy_dynamic_module_on_http_filter_config_destroy(self.config) };
    }
}
