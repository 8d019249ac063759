//! The host side of the proxy-wasm ABI 0.2.1: the `env` imports the filter (and the Rust SDK)
//! call, one module per family of host calls, each defining its own imports. Guest memory is
//! read and written with bounds checks; buffers handed to the guest are allocated through its
//! `proxy_on_memory_allocate`. An import no family defines answers `Unimplemented` and is
//! recorded: it never silently succeeds.

mod buffers;
mod headers;
mod http_calls;
mod logging;
mod metrics;
mod properties;
mod shared_data;
mod stream;
mod timers;

use std::collections::HashSet;

use wasmtime::{Caller, Extern, IntoFunc, Linker, Module, Val, ValType};

use crate::host::{HeaderMap, Host, HttpCall, MetricKind};

/// proxy-wasm status codes (ABI 0.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    InvalidMemoryAccess = 6,
    CasMismatch = 8,
    Unimplemented = 12,
}

/// proxy-wasm header map types.
pub const REQUEST_HEADERS: i32 = 0;
pub const RESPONSE_HEADERS: i32 = 2;
pub const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
/// proxy-wasm buffer types.
const HTTP_CALL_RESPONSE_BODY: i32 = 4;
const VM_CONFIGURATION: i32 = 6;
const PLUGIN_CONFIGURATION: i32 = 7;

type Result<T> = std::result::Result<T, Status>;

fn memory(caller: &mut Caller<'_, Host>) -> Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(Status::InvalidMemoryAccess),
    }
}

fn read(caller: &mut Caller<'_, Host>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let memory = memory(caller)?;
    let (ptr, len) = (
        usize::try_from(ptr).map_err(|_| Status::InvalidMemoryAccess)?,
        usize::try_from(len).map_err(|_| Status::InvalidMemoryAccess)?,
    );
    let end = ptr.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data(&caller)
        .get(ptr..end)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

fn read_str(caller: &mut Caller<'_, Host>, ptr: i32, len: i32) -> Result<String> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| Status::BadArgument)
}

fn write(caller: &mut Caller<'_, Host>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let memory = memory(caller)?;
    let ptr = usize::try_from(ptr).map_err(|_| Status::InvalidMemoryAccess)?;
    let end = ptr.checked_add(bytes.len()).ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data_mut(&mut *caller)
        .get_mut(ptr..end)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(bytes);
    Ok(())
}

/// Copies `bytes` into a guest allocation and stores its address and size at the return pointers.
fn hand_over(caller: &mut Caller<'_, Host>, bytes: &[u8], ret_ptr: i32, ret_size: i32) -> Result<()> {
    let allocate = caller
        .get_export("proxy_on_memory_allocate")
        .and_then(Extern::into_func)
        .ok_or(Status::InvalidMemoryAccess)?
        .typed::<i32, i32>(&caller)
        .map_err(|_| Status::InvalidMemoryAccess)?;
    let size = i32::try_from(bytes.len()).map_err(|_| Status::BadArgument)?;
    let address = if bytes.is_empty() {
        0
    } else {
        allocate
            .call(&mut *caller, size)
            .map_err(|_| Status::InvalidMemoryAccess)?
    };
    if !bytes.is_empty() {
        write(caller, address, bytes)?;
    }
    write(caller, ret_ptr, &address.to_le_bytes())?;
    write(caller, ret_size, &size.to_le_bytes())
}

/// Hands a looked-up value to the guest, or answers `NotFound` when there is none.
fn hand_over_found(caller: &mut Caller<'_, Host>, value: Option<Vec<u8>>, ret_ptr: i32, ret_size: i32) -> i32 {
    match value {
        Some(value) => status(hand_over(caller, &value, ret_ptr, ret_size)),
        None => Status::NotFound as i32,
    }
}

/// The ABI's serialised header map: count, (key length, value length)*, then each key and value
/// followed by a NUL.
pub fn serialize_pairs(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&u32::try_from(pairs.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Parses a serialised header map; `None` when it is malformed.
pub fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let word = |at: usize| -> Option<usize> {
        let chunk: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(chunk)).ok()
    };
    let count = word(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + count.checked_mul(8)?;
    let mut pairs = Vec::with_capacity(sizes.len());
    for (key_len, value_len) in sizes {
        let key = bytes.get(at..at + key_len)?;
        at += key_len + 1;
        let value = bytes.get(at..at + value_len)?;
        at += value_len + 1;
        pairs.push((String::from_utf8(key.to_vec()).ok()?, value.to_vec()));
    }
    Some(pairs)
}

fn status(result: Result<()>) -> i32 {
    match result {
        Ok(()) => Status::Ok as i32,
        Err(status) => status as i32,
    }
}

/// The `env` namespace of a linker, remembering what it defined.
pub(super) struct Env<'a> {
    linker: &'a mut Linker<Host>,
    defined: HashSet<&'static str>,
}

impl Env<'_> {
    fn define<Params, Args>(
        &mut self,
        name: &'static str,
        func: impl IntoFunc<Host, Params, Args>,
    ) -> wasmtime::Result<()> {
        self.linker.func_wrap("env", name, func)?;
        self.defined.insert(name);
        Ok(())
    }
}

/// Defines every family's imports in `linker`; every other `env` import of `module` answers
/// `Unimplemented` and is recorded by name.
pub fn link(linker: &mut Linker<Host>, module: &Module) -> wasmtime::Result<()> {
    let mut env = Env {
        linker,
        defined: HashSet::new(),
    };
    logging::register(&mut env)?;
    timers::register(&mut env)?;
    buffers::register(&mut env)?;
    headers::register(&mut env)?;
    properties::register(&mut env)?;
    metrics::register(&mut env)?;
    http_calls::register(&mut env)?;
    shared_data::register(&mut env)?;
    stream::register(&mut env)?;
    let Env { linker, defined } = env;
    let mut stubs = Vec::new();
    for import in module.imports() {
        if import.module() != "env" || defined.contains(import.name()) {
            continue;
        }
        if let wasmtime::ExternType::Func(ty) = import.ty() {
            stubs.push((import.name().to_owned(), ty));
        }
    }
    for (name, ty) in stubs {
        let results: Vec<ValType> = ty.results().collect();
        let recorded = name.clone();
        linker.func_new("env", &name, ty, move |mut caller: Caller<'_, Host>, _params, out| {
            caller.data_mut().unsupported.push(recorded.clone());
            for (slot, ty) in out.iter_mut().zip(&results) {
                *slot = match ty {
                    ValType::I64 => Val::I64(Status::Unimplemented as i64),
                    _ => Val::I32(Status::Unimplemented as i32),
                };
            }
            Ok(())
        })?;
    }
    Ok(())
}
