//! The host side of the proxy-wasm ABI 0.2.1: the `env` imports the filter (and the Rust SDK)
//! call. Guest memory is read and written with bounds checks; buffers handed to the guest are
//! allocated through its `proxy_on_memory_allocate`. An import this host does not implement
//! answers `Unimplemented` and is recorded: it never silently succeeds.

use std::time::UNIX_EPOCH;

use wasmtime::{Caller, Extern, Linker, Module, Val, ValType};

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

/// Reads a header name (lowercased) and, when given, a value from guest memory, then applies
/// `edit` to header map `map`. Counts as one host call.
fn edit_map(
    caller: &mut Caller<'_, Host>,
    map: i32,
    key: (i32, i32),
    value: Option<(i32, i32)>,
    edit: impl FnOnce(&mut HeaderMap, String, Vec<u8>),
) -> i32 {
    caller.data_mut().host_calls += 1;
    let key = match read_str(caller, key.0, key.1) {
        Ok(key) => key.to_ascii_lowercase(),
        Err(status) => return status as i32,
    };
    let value = match value.map(|(ptr, len)| read(caller, ptr, len)).transpose() {
        Ok(value) => value.unwrap_or_default(),
        Err(status) => return status as i32,
    };
    let Some(pairs) = caller.data_mut().map_mut(map) else {
        return Status::BadArgument as i32;
    };
    edit(pairs, key, value);
    Status::Ok as i32
}

fn status(result: Result<()>) -> i32 {
    match result {
        Ok(()) => Status::Ok as i32,
        Err(status) => status as i32,
    }
}

/// The `env` functions [`add_to_linker`] defines.
pub const IMPLEMENTED: [&str; 23] = [
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_call_foreign_function",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_done",
    "proxy_send_local_response",
    "proxy_continue_stream",
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_get_header_map_value",
    "proxy_get_header_map_pairs",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_property",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_http_call",
    "proxy_set_effective_context",
];

/// Adds the ABI functions this host implements to `linker`.
pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Caller<'_, Host>, level: i32, ptr: i32, len: i32| -> i32 {
            status(read_str(&mut caller, ptr, len).map(|message| caller.data_mut().logs.push((level, message))))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, Host>, ret: i32| -> i32 {
            // Trace: the filter decides for itself what to log.
            status(write(&mut caller, ret, &0i32.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, Host>, ret: i32| -> i32 {
            let now = caller
                .data()
                .now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            caller.data_mut().host_calls += 1;
            status(write(&mut caller, ret, &now.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, Host>, period: i32| -> i32 {
            caller.data_mut().tick_period_ms = u32::try_from(period).ok();
            Status::Ok as i32
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, Host>, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| -> i32 {
            let buffer = match kind {
                PLUGIN_CONFIGURATION => caller.data().plugin_configuration.clone(),
                VM_CONFIGURATION => Vec::new(),
                HTTP_CALL_RESPONSE_BODY => caller
                    .data()
                    .http_call_response
                    .as_ref()
                    .map(|r| r.1.clone())
                    .unwrap_or_default(),
                _ => return Status::NotFound as i32,
            };
            let start = usize::try_from(start).unwrap_or(usize::MAX).min(buffer.len());
            let end = start
                .saturating_add(usize::try_from(max).unwrap_or(usize::MAX))
                .min(buffer.len());
            status(hand_over(&mut caller, &buffer[start..end], ret_ptr, ret_size))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, Host>, map: i32, key_ptr: i32, key_len: i32, ret_ptr: i32, ret_size: i32| -> i32 {
            caller.data_mut().host_calls += 1;
            let key = match read_str(&mut caller, key_ptr, key_len) {
                Ok(key) => key.to_ascii_lowercase(),
                Err(status) => return status as i32,
            };
            let value = match caller.data().map(map) {
                Some(pairs) => pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()),
                None => return Status::BadArgument as i32,
            };
            hand_over_found(&mut caller, value, ret_ptr, ret_size)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, Host>, map: i32, ret_ptr: i32, ret_size: i32| -> i32 {
            caller.data_mut().host_calls += 1;
            let Some(pairs) = caller.data().map(map).map(|p| serialize_pairs(p)) else {
                return Status::BadArgument as i32;
            };
            status(hand_over(&mut caller, &pairs, ret_ptr, ret_size))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, Host>, map: i32, key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32| -> i32 {
            edit_map(
                &mut caller,
                map,
                (key_ptr, key_len),
                Some((value_ptr, value_len)),
                |pairs, key, value| {
                    // As Envoy: every copy of the header goes, one value stays.
                    pairs.retain(|(k, _)| *k != key);
                    pairs.push((key, value));
                },
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, Host>, map: i32, key_ptr: i32, key_len: i32| -> i32 {
            edit_map(&mut caller, map, (key_ptr, key_len), None, |pairs, key, _| {
                pairs.retain(|(k, _)| *k != key)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, Host>, map: i32, key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32| -> i32 {
            edit_map(
                &mut caller,
                map,
                (key_ptr, key_len),
                Some((value_ptr, value_len)),
                |pairs, key, value| {
                    pairs.push((key, value));
                },
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Caller<'_, Host>, path_ptr: i32, path_len: i32, ret_ptr: i32, ret_size: i32| -> i32 {
            caller.data_mut().host_calls += 1;
            let path = match read(&mut caller, path_ptr, path_len) {
                Ok(path) => path,
                Err(status) => return status as i32,
            };
            let key: Vec<String> = path
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            let value = caller.data().properties.get(&key.join(".")).cloned();
            hand_over_found(&mut caller, value, ret_ptr, ret_size)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Caller<'_, Host>, kind: i32, name_ptr: i32, name_len: i32, ret: i32| -> i32 {
            let name = match read_str(&mut caller, name_ptr, name_len) {
                Ok(name) => name,
                Err(status) => return status as i32,
            };
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return Status::BadArgument as i32,
            };
            let id = caller.data_mut().define_metric(name, kind);
            status(write(&mut caller, ret, &id.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut caller: Caller<'_, Host>, id: i32, offset: i64| -> i32 {
            caller.data_mut().host_calls += 1;
            let Some(metric) = usize::try_from(id)
                .ok()
                .and_then(|i| caller.data_mut().metrics.get_mut(i))
            else {
                return Status::NotFound as i32;
            };
            metric.2 = metric.2.saturating_add(offset);
            Status::Ok as i32
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Caller<'_, Host>,
         upstream_ptr: i32,
         upstream_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         body_ptr: i32,
         body_len: i32,
         trailers_ptr: i32,
         trailers_len: i32,
         timeout_ms: i32,
         token_ret: i32|
         -> i32 {
            let _ = (trailers_ptr, trailers_len);
            let upstream = match read_str(&mut caller, upstream_ptr, upstream_len) {
                Ok(u) => u,
                Err(status) => return status as i32,
            };
            let headers = match read(&mut caller, headers_ptr, headers_len)
                .ok()
                .and_then(|b| deserialize_pairs(&b))
            {
                Some(headers) => headers,
                None => return Status::BadArgument as i32,
            };
            let body = read(&mut caller, body_ptr, body_len).unwrap_or_default();
            if !caller.data().clusters.contains(&upstream) {
                return Status::BadArgument as i32;
            }
            let token = caller.data_mut().next_token;
            caller.data_mut().next_token += 1;
            caller.data_mut().http_calls.push(HttpCall {
                token,
                upstream,
                headers,
                body,
                timeout_ms: u32::try_from(timeout_ms).unwrap_or(0),
            });
            status(write(&mut caller, token_ret, &token.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |_caller: Caller<'_, Host>, _context: i32| -> i32 { Status::Ok as i32 },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Caller<'_, Host>, key_ptr: i32, key_len: i32, ret_ptr: i32, ret_size: i32, ret_cas: i32| -> i32 {
            caller.data_mut().host_calls += 1;
            let key = match read_str(&mut caller, key_ptr, key_len) {
                Ok(key) => key,
                Err(status) => return status as i32,
            };
            let Some((value, cas)) = caller.data().shared_data.get(&key).cloned() else {
                return Status::NotFound as i32;
            };
            status(
                hand_over(&mut caller, &value, ret_ptr, ret_size)
                    .and_then(|()| write(&mut caller, ret_cas, &cas.to_le_bytes())),
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Caller<'_, Host>, key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32, cas: i32| -> i32 {
            let (key, value) = match (
                read_str(&mut caller, key_ptr, key_len),
                read(&mut caller, value_ptr, value_len),
            ) {
                (Ok(k), Ok(v)) => (k, v),
                _ => return Status::InvalidMemoryAccess as i32,
            };
            let cas = u32::from_ne_bytes(cas.to_ne_bytes());
            let data = &mut caller.data_mut().shared_data;
            let current = data.get(&key).map_or(0, |(_, c)| *c);
            if cas != 0 && cas != current {
                return Status::CasMismatch as i32;
            }
            data.insert(key, (value, current.wrapping_add(1).max(1)));
            Status::Ok as i32
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut caller: Caller<'_, Host>,
         name_ptr: i32,
         name_len: i32,
         _args_ptr: i32,
         _args_len: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> i32 {
            let name = match read_str(&mut caller, name_ptr, name_len) {
                Ok(name) => name,
                Err(status) => return status as i32,
            };
            caller.data_mut().foreign_calls.push(name.clone());
            match name.as_str() {
                // Envoy's: the route is picked again. Nothing to return.
                "clear_route_cache" => status(hand_over(&mut caller, &[], ret_ptr, ret_size)),
                _ => Status::NotFound as i32,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Caller<'_, Host>, id: i32, ret: i32| -> i32 {
            let Some(value) = usize::try_from(id)
                .ok()
                .and_then(|i| caller.data().metrics.get(i))
                .map(|m| m.2)
            else {
                return Status::NotFound as i32;
            };
            status(write(
                &mut caller,
                ret,
                &u64::try_from(value).unwrap_or(0).to_le_bytes(),
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut caller: Caller<'_, Host>, id: i32, value: i64| -> i32 {
            let Some(metric) = usize::try_from(id)
                .ok()
                .and_then(|i| caller.data_mut().metrics.get_mut(i))
            else {
                return Status::NotFound as i32;
            };
            metric.2 = value;
            Status::Ok as i32
        },
    )?;
    linker.func_wrap("env", "proxy_done", |_caller: Caller<'_, Host>| -> i32 {
        Status::Ok as i32
    })?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |_caller: Caller<'_, Host>, _stream: i32| -> i32 { Status::Ok as i32 },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Caller<'_, Host>,
         code: i32,
         _details_ptr: i32,
         _details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         _grpc_status: i32|
         -> i32 {
            let body = read(&mut caller, body_ptr, body_len).unwrap_or_default();
            let headers = read(&mut caller, headers_ptr, headers_len)
                .ok()
                .and_then(|b| deserialize_pairs(&b))
                .unwrap_or_default();
            caller.data_mut().local_response = Some((u16::try_from(code).unwrap_or(0), headers, body));
            Status::Ok as i32
        },
    )?;
    Ok(())
}

/// Every other `env` import of `module` answers `Unimplemented` and is recorded by name.
pub fn stub_unknown_imports(linker: &mut Linker<Host>, module: &Module) -> wasmtime::Result<()> {
    let mut stubs = Vec::new();
    for import in module.imports() {
        if import.module() != "env" || IMPLEMENTED.contains(&import.name()) {
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
