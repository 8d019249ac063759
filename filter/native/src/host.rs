//! The exchange's host in Envoy: the stream's header callbacks. Header values are borrowed from
//! Envoy, not copied: a value lives until the end of the hook or the next setter, which the
//! borrow checker enforces here (reads borrow the host, setters take it mutably).

use std::cell::{Cell, RefCell};
use std::ffi::c_void;

use sticky_core::{CookieCache, Counter, ExchangeHost};

use crate::abi::{self, EnvoyBuffer, ModuleBuffer};
use crate::{FilterConfig, lent, log, now_millis};

thread_local! {
    /// Round-robin position of this worker, for requests no cookie pins.
    static SEQUENCE: Cell<u64> = const { Cell::new(0) };
    /// Cookies this worker already authenticated: a sticky hit skips AES-GCM.
    static COOKIE_CACHE: RefCell<CookieCache> = RefCell::new(CookieCache::default());
}

/// Runs `decide` with this worker's cookie cache.
pub fn with_cookie_cache<R>(decide: impl FnOnce(&mut CookieCache) -> R) -> R {
    COOKIE_CACHE.with(|cache| match cache.try_borrow_mut() {
        Ok(mut cache) => decide(&mut cache),
        // Never nested; were it, a fresh cache decides the same, only slower.
        Err(_) => decide(&mut CookieCache::default()),
    })
}

/// The next round-robin position of this worker.
pub fn next_sequence() -> u64 {
    SEQUENCE.with(|sequence| {
        let value = sequence.get();
        sequence.set(value.wrapping_add(1));
        value
    })
}

pub struct NativeHost<'c> {
    pub filter_envoy: *mut c_void,
    pub config: &'c FilterConfig,
}

impl NativeHost<'_> {
    /// The `index`-th value of a header and how many values it has.
    fn header(&self, header_type: u32, name: &str, index: usize) -> (Option<&[u8]>, usize) {
        let mut value = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        let mut count = 0usize;
        // SAFETY: Envoy's stream pointer during the hook; `name` outlives the call; the result
        // and size pointers are valid.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.filter_envoy,
                header_type,
                ModuleBuffer::of(name.as_bytes()),
                &raw mut value,
                index,
                &raw mut count,
            )
        };
        if !found || index >= count {
            return (None, count);
        }
        // SAFETY: Envoy lends the value until the end of the hook or the next setter; the
        // returned slice borrows `self`, which every setter takes mutably.
        (Some(unsafe { lent(value.ptr, value.length) }), count)
    }

    /// Every value of a header.
    fn header_values(&self, header_type: u32, name: &str) -> Vec<&[u8]> {
        let (first, count) = self.header(header_type, name, 0);
        first
            .into_iter()
            .chain((1..count).filter_map(|index| self.header(header_type, name, index).0))
            .collect()
    }

    fn set(&mut self, header_type: u32, name: &str, value: ModuleBuffer) {
        // SAFETY: Envoy's stream pointer during the hook; both buffers outlive the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.filter_envoy,
                header_type,
                ModuleBuffer::of(name.as_bytes()),
                value,
            );
        }
    }
}

impl ExchangeHost for NativeHost<'_> {
    type Value<'a>
        = &'a [u8]
    where
        Self: 'a;

    fn request_header(&self, name: &str) -> Option<&[u8]> {
        self.header(abi::REQUEST_HEADER, name, 0).0
    }

    fn request_header_values(&self, name: &str) -> Vec<&[u8]> {
        self.header_values(abi::REQUEST_HEADER, name)
    }

    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        self.set(abi::REQUEST_HEADER, name, ModuleBuffer::of(value));
    }

    fn remove_request_header(&mut self, name: &str) {
        self.set(abi::REQUEST_HEADER, name, ModuleBuffer::NULL);
    }

    fn response_header(&self, name: &str) -> Option<&[u8]> {
        self.header(abi::RESPONSE_HEADER, name, 0).0
    }

    fn response_header_values(&self, name: &str) -> Vec<&[u8]> {
        self.header_values(abi::RESPONSE_HEADER, name)
    }

    fn remove_response_header(&mut self, name: &str) {
        self.set(abi::RESPONSE_HEADER, name, ModuleBuffer::NULL);
    }

    fn add_response_header(&mut self, name: &str, value: &[u8]) {
        // SAFETY: Envoy's stream pointer during the hook; both buffers outlive the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                self.filter_envoy,
                abi::RESPONSE_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            );
        }
    }

    fn upstream_address(&self) -> Option<Vec<u8>> {
        let mut address = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        let mut port = 0u32;
        // SAFETY: Envoy's stream pointer during the hook; the out pointers are valid.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_upstream_remote_address(
                self.filter_envoy,
                &raw mut address,
                &raw mut port,
            )
        };
        if !found {
            return None;
        }
        // SAFETY: Envoy lends the address for the duration of the hook.
        let ip = unsafe { lent(address.ptr, address.length) };
        let mut text = Vec::with_capacity(ip.len() + 6);
        text.extend_from_slice(ip);
        text.push(b':');
        text.extend_from_slice(port.to_string().as_bytes());
        Some(text)
    }

    fn now_millis(&self) -> u64 {
        now_millis()
    }

    fn nonce(&self) -> Option<[u8; 12]> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).ok().map(|()| nonce)
    }

    fn count(&self, counter: Counter) {
        self.config.count_from_stream(self.filter_envoy, counter, 1);
    }

    fn warn(&self, message: &str) {
        log(abi::LOG_WARN, message);
    }
}
