//! A host of the proxy-wasm ABI (0.2.1) on wasmtime that runs the very `.wasm` Envoy loads,
//! without Envoy. The API reads like the events a proxy sees:
//!
//! ```text
//! let testbed = Testbed::load(&wasm)?;
//! let mut plugin = testbed.plugin(&config_json)?;
//! let stream = plugin.request(&[("cookie", b"AWSELB=…")])?;   // the filter's request half
//! stream.header("x-sticky-target");                             // what it set or removed
//! let response = plugin.respond(&stream, Some("127.0.0.1:9001"), &[])?;
//! response.set_cookies();                                       // what it issued
//! plugin.advance(Duration::from_secs(600));                     // the clock it reads
//! plugin.counter("sticky.pinned");                              // its stats, logs, http calls
//! ```
//!
//! Each plugin has its own `Store` (no globals: tests run in parallel). A trap is an error of
//! the call that caused it, never a panic of the host.

mod abi;
mod host;
pub mod serve;

use std::path::Path;
use std::time::Duration;

use wasmtime::{Config, Engine, Instance, Linker, Module, Store, WasmParams, WasmResults};
use wasmtime_wasi::WasiCtxBuilder;

pub use abi::{Status, deserialize_pairs, serialize_pairs};
pub use host::{Host, HttpCall, MetricKind};

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("loading the module: {step}")]
    Load {
        step: String,
        #[source]
        source: BoxedError,
    },
    /// The trap's message and the guest's backtrace are in `source` (`{:?}` shows them).
    #[error("the filter trapped in {export}")]
    Trap {
        export: String,
        #[source]
        source: BoxedError,
    },
    #[error("the module lacks the export {0}")]
    MissingExport(String),
    #[error("the filter refused its configuration (on_configure returned false); its logs: {0:?}")]
    Refused(Vec<String>),
}

/// What wasmtime and the file system report, kept whole as an error's source.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `TestbedError::Load` at `step`, keeping what failed as its source.
fn load_error(step: impl Into<String>) -> impl FnOnce(wasmtime::Error) -> TestbedError {
    let step = step.into();
    move |source| TestbedError::Load {
        step,
        source: source.into(),
    }
}

/// A compiled filter module and the host functions it links against.
pub struct Testbed {
    engine: Engine,
    module: Module,
    linker: Linker<Host>,
}

/// The proxy's answer to an HTTP context's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// A request after the filter's request half.
#[derive(Debug, Clone)]
pub struct Stream {
    pub context_id: i32,
    pub action: Action,
    /// The request headers as the filter left them (what goes upstream).
    pub request_headers: Vec<(String, Vec<u8>)>,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.request_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.request_headers.iter().filter(|(k, _)| k == name).count()
    }
}

/// A response after the filter's response half.
#[derive(Debug, Clone)]
pub struct Response {
    pub action: Action,
    pub response_headers: Vec<(String, Vec<u8>)>,
}

impl Response {
    /// The first value of header `name` (lowercase), as the client gets it.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.response_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The `Set-Cookie` values, as text.
    pub fn set_cookies(&self) -> Vec<String> {
        self.response_headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The value of the cookie `name` this response sets.
    pub fn cookie(&self, name: &str) -> Option<String> {
        sticky_testing::fixtures::cookie_set(self.set_cookies().iter().map(String::as_str), name)
    }
}

impl Testbed {
    /// Compiles the `.wasm` at `path`.
    pub fn load(path: &Path) -> Result<Self, TestbedError> {
        let bytes = std::fs::read(path).map_err(|e| TestbedError::Load {
            step: format!("reading {}", path.display()),
            source: e.into(),
        })?;
        Self::from_bytes(&bytes)
    }

    /// Compiles a module from its binary (or, for ABI conformance tests, WAT text).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TestbedError> {
        let engine = Engine::new(&Config::new()).map_err(load_error("configuring the engine"))?;
        let module = Module::new(&engine, bytes).map_err(load_error("compiling the module"))?;
        let mut linker: Linker<Host> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |host: &mut Host| &mut host.wasi)
            .map_err(load_error("linking WASI"))?;
        abi::link(&mut linker, &module).map_err(load_error("linking the proxy-wasm ABI"))?;
        Ok(Self { engine, module, linker })
    }

    /// Starts the VM and configures a plugin with `configuration` (the plugin's JSON string);
    /// `clusters` are the Envoy clusters its `dispatch_http_call`s may name.
    pub fn plugin(&self, configuration: &str, clusters: &[&str]) -> Result<Plugin, TestbedError> {
        let wasi = WasiCtxBuilder::new().build_p1();
        let mut host = Host::new(wasi);
        host.plugin_configuration = configuration.as_bytes().to_vec();
        host.clusters = clusters.iter().map(|c| (*c).to_owned()).collect();
        let mut store = Store::new(&self.engine, host);
        let instance = self
            .linker
            .instantiate(&mut store, &self.module)
            .map_err(load_error("instantiating the module"))?;
        let mut plugin = Plugin {
            store,
            instance,
            root: 1,
            next_context: 2,
        };
        if plugin.has_export("_initialize") {
            plugin.call::<(), ()>("_initialize", ())?;
        }
        plugin.call::<(i32, i32), ()>("proxy_on_context_create", (plugin.root, 0))?;
        plugin.call::<(i32, i32), i32>("proxy_on_vm_start", (plugin.root, 0))?;
        let size = i32::try_from(configuration.len()).unwrap_or(i32::MAX);
        let configured = plugin.call::<(i32, i32), i32>("proxy_on_configure", (plugin.root, size))?;
        if configured == 0 {
            return Err(TestbedError::Refused(plugin.logs()));
        }
        Ok(plugin)
    }
}

/// One configured plugin: a root context and the HTTP contexts it creates.
pub struct Plugin {
    store: Store<Host>,
    instance: Instance,
    root: i32,
    next_context: i32,
}

fn action(code: i32) -> Action {
    if code == 0 { Action::Continue } else { Action::Pause }
}

fn owned(headers: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_vec()))
        .collect()
}

impl Plugin {
    fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    fn call<P: WasmParams, R: WasmResults>(&mut self, export: &str, params: P) -> Result<R, TestbedError> {
        let func = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, export)
            .map_err(|_| TestbedError::MissingExport(export.to_owned()))?;
        func.call(&mut self.store, params).map_err(|e| TestbedError::Trap {
            export: export.to_owned(),
            source: e.into(),
        })
    }

    /// The request half: a new HTTP context sees `headers` (lowercased names, raw values).
    pub fn request(&mut self, headers: &[(&str, &[u8])]) -> Result<Stream, TestbedError> {
        let context_id = self.next_context;
        self.next_context += 1;
        self.call::<(i32, i32), ()>("proxy_on_context_create", (context_id, self.root))?;
        self.store.data_mut().request_headers = owned(headers);
        let count = i32::try_from(headers.len()).unwrap_or(i32::MAX);
        let code = self.call::<(i32, i32, i32), i32>("proxy_on_request_headers", (context_id, count, 1))?;
        Ok(Stream {
            context_id,
            action: action(code),
            request_headers: self.store.data().request_headers.clone(),
        })
    }

    /// The response half: `upstream` (`ip:port`, Envoy's `upstream.address`) answered with
    /// `headers`. The context is then done.
    pub fn respond(
        &mut self,
        stream: &Stream,
        upstream: Option<&str>,
        headers: &[(&str, &[u8])],
    ) -> Result<Response, TestbedError> {
        let host = self.store.data_mut();
        host.request_headers = stream.request_headers.clone();
        host.response_headers = owned(headers);
        // As the route of envoy/bootstrap.yaml does: the answering upstream in the upstream
        // header (default name), overwriting any copy the upstream sent; and the property.
        let upstream_header = sticky_core::plugin::DEFAULT_UPSTREAM_HEADER;
        host.response_headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case(upstream_header));
        match upstream {
            Some(address) => {
                host.response_headers
                    .push((upstream_header.to_owned(), address.as_bytes().to_vec()));
                host.properties
                    .insert("upstream.address".to_owned(), address.as_bytes().to_vec())
            }
            None => host.properties.remove("upstream.address"),
        };
        let count = i32::try_from(headers.len()).unwrap_or(i32::MAX);
        let code = self.call::<(i32, i32, i32), i32>("proxy_on_response_headers", (stream.context_id, count, 1))?;
        let response = Response {
            action: action(code),
            response_headers: self.store.data().response_headers.clone(),
        };
        self.call::<i32, i32>("proxy_on_done", stream.context_id)?;
        self.call::<i32, ()>("proxy_on_delete", stream.context_id)?;
        Ok(response)
    }

    /// Moves the filter's clock.
    pub fn advance(&mut self, by: Duration) {
        self.store.data_mut().now += by;
    }

    /// Delivers one tick to the root context.
    pub fn tick(&mut self) -> Result<(), TestbedError> {
        self.call::<i32, ()>("proxy_on_tick", self.root)
    }

    /// The tick period the filter asked for.
    pub fn tick_period(&self) -> Option<Duration> {
        self.store
            .data()
            .tick_period_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// Takes the HTTP calls the filter dispatched and that await an answer.
    pub fn take_http_calls(&mut self) -> Vec<HttpCall> {
        std::mem::take(&mut self.store.data_mut().http_calls)
    }

    /// Answers an HTTP call with `status` and `body`.
    pub fn answer_http_call(&mut self, call: &HttpCall, status: u16, body: &[u8]) -> Result<(), TestbedError> {
        self.store.data_mut().http_call_response = Some((
            vec![(":status".to_owned(), status.to_string().into_bytes())],
            body.to_vec(),
        ));
        let token = i32::try_from(call.token).unwrap_or(i32::MAX);
        let size = i32::try_from(body.len()).unwrap_or(i32::MAX);
        let result =
            self.call::<(i32, i32, i32, i32, i32), ()>("proxy_on_http_call_response", (self.root, token, 1, size, 0));
        self.store.data_mut().http_call_response = None;
        result
    }

    /// Calls an export taking nothing and returning an i32 (for ABI conformance tests).
    pub fn call_export(&mut self, export: &str) -> Result<i32, TestbedError> {
        self.call::<(), i32>(export, ())
    }

    /// The host's state (shared data, foreign calls, local response, …).
    pub fn host(&self) -> &Host {
        self.store.data()
    }

    /// The value of the metric `name` (0 if undefined).
    pub fn counter(&self, name: &str) -> i64 {
        self.store
            .data()
            .metrics
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or(0, |m| m.2)
    }

    pub fn logs(&self) -> Vec<String> {
        self.store.data().logs.iter().map(|(_, m)| m.clone()).collect()
    }

    /// Imports the filter called that this host does not implement.
    pub fn unsupported_calls(&self) -> Vec<String> {
        self.store.data().unsupported.clone()
    }

    /// Host calls made since the last reset (headers, properties, time, metrics).
    pub fn host_calls(&self) -> u64 {
        self.store.data().host_calls
    }

    pub fn reset_host_calls(&mut self) {
        self.store.data_mut().host_calls = 0;
    }
}
