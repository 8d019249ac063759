//! The host's state for one plugin: what Envoy would hold for the filter's contexts.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use wasmtime_wasi::p1::WasiP1Ctx;

use crate::abi::{HTTP_CALL_RESPONSE_HEADERS, REQUEST_HEADERS, RESPONSE_HEADERS};

/// A header map: lowercase names, raw values, in order.
pub type HeaderMap = Vec<(String, Vec<u8>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// An outgoing `dispatch_http_call`, waiting for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    pub upstream: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

pub struct Host {
    pub wasi: WasiP1Ctx,
    /// The clock the filter reads (`proxy_get_current_time_nanoseconds`); tests move it.
    pub now: SystemTime,
    pub plugin_configuration: Vec<u8>,
    pub request_headers: HeaderMap,
    pub response_headers: HeaderMap,
    /// Headers and body of the HTTP call answer being delivered.
    pub http_call_response: Option<(HeaderMap, Vec<u8>)>,
    /// Properties by dotted path (`upstream.address`).
    pub properties: BTreeMap<String, Vec<u8>>,
    /// (name, kind, value), indexed by metric id.
    pub metrics: Vec<(String, MetricKind, i64)>,
    /// (level, message).
    pub logs: Vec<(i32, String)>,
    pub tick_period_ms: Option<u32>,
    pub http_calls: Vec<HttpCall>,
    pub next_token: u32,
    /// Clusters `dispatch_http_call` may name.
    pub clusters: HashSet<String>,
    /// Imports the filter called that this host does not implement.
    pub unsupported: Vec<String>,
    /// Host calls made on the request path (header, property, time and metric calls).
    pub host_calls: u64,
    /// Shared data: key → (value, CAS).
    pub shared_data: std::collections::HashMap<String, (Vec<u8>, u32)>,
    /// Foreign functions the filter called, by name.
    pub foreign_calls: Vec<String>,
    /// A local response the filter sent: (status, headers, body).
    pub local_response: Option<(u16, HeaderMap, Vec<u8>)>,
}

impl Host {
    pub fn new(wasi: WasiP1Ctx) -> Self {
        Self {
            wasi,
            now: SystemTime::now(),
            plugin_configuration: Vec::new(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            http_call_response: None,
            properties: BTreeMap::new(),
            metrics: Vec::new(),
            logs: Vec::new(),
            tick_period_ms: None,
            http_calls: Vec::new(),
            next_token: 1,
            clusters: HashSet::new(),
            unsupported: Vec::new(),
            host_calls: 0,
            shared_data: std::collections::HashMap::new(),
            foreign_calls: Vec::new(),
            local_response: None,
        }
    }

    pub fn map(&self, map: i32) -> Option<&HeaderMap> {
        match map {
            REQUEST_HEADERS => Some(&self.request_headers),
            RESPONSE_HEADERS => Some(&self.response_headers),
            HTTP_CALL_RESPONSE_HEADERS => self.http_call_response.as_ref().map(|r| &r.0),
            _ => None,
        }
    }

    pub fn map_mut(&mut self, map: i32) -> Option<&mut HeaderMap> {
        match map {
            REQUEST_HEADERS => Some(&mut self.request_headers),
            RESPONSE_HEADERS => Some(&mut self.response_headers),
            HTTP_CALL_RESPONSE_HEADERS => self.http_call_response.as_mut().map(|r| &mut r.0),
            _ => None,
        }
    }

    /// Defines a metric, or returns the id of the one of that name (as Envoy does).
    pub fn define_metric(&mut self, name: String, kind: MetricKind) -> u32 {
        let index = match self.metrics.iter().position(|(n, _, _)| *n == name) {
            Some(index) => index,
            None => {
                self.metrics.push((name, kind, 0));
                self.metrics.len() - 1
            }
        };
        u32::try_from(index).unwrap_or(u32::MAX)
    }
}
